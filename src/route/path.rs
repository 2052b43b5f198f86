//! Path normalisation for the routing decision (RFC 3986 §6.2.2). A route must hold for every
//! way a backend may read the path, so the decision is made on the most-decoded form:
//! percent-escapes decoded, `/`, `\`, `%2F` and `%5C` all separators, `.` and `..` segments
//! resolved, empty segments merged (unless `merge_slashes = false`). A path that climbs above
//! `/`, a broken escape, an escaped NUL or a `#` is refused (400).
//!
//! What goes upstream is the path as received when it needs no change (escapes such as
//! `group%2Fname` reach the backend as sent), and otherwise the normalised path, written with
//! `/` separators and each segment as received except that escapes of unreserved characters are
//! decoded and the others upper-cased.
//!
//! The common path (`/api/users/42`: no `%`, `\`, `#`, `//` or segment starting with `.`) is
//! recognised by one scan and costs no copy.

use crate::config::EscapedSlashes;

/// Per-listener normalisation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// More `..` segments than segments before them.
    AboveRoot,
    /// `%00`.
    Nul,
    /// `%2F` or `%5C` with `escaped_slashes = "reject"`.
    EscapedSlash,
    /// A `#` in the path: a fragment is never sent in a request.
    Fragment,
}

impl PathError {
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::BadEscape => "invalid percent-escape in the path",
            PathError::AboveRoot => "path climbs above the root",
            PathError::Nul => "escaped NUL in the path",
            PathError::EscapedSlash => "escaped slash in the path",
            PathError::Fragment => "fragment in the request target",
        }
    }
}

/// Where the decision path and the forwarded path are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalized {
    /// The path as received is already normal: decide on it and forward it.
    Unchanged,
    /// Decide on the decoded path written to `decision`; forward the path as received.
    Decoded,
    /// Decide on `decision`; forward `forward` (the normalised path, re-encoded).
    Rewritten,
}

/// Normalises `path` (the request target up to `?`, starting with `/`). `decision` and
/// `forward` are scratch buffers (cleared here) that hold the results the outcome names.
pub fn normalize(
    path: &[u8],
    opts: PathOptions,
    decision: &mut Vec<u8>,
    forward: &mut Vec<u8>,
) -> Result<Normalized, PathError> {
    if is_plain(path) {
        return Ok(Normalized::Unchanged);
    }
    slow(path, opts, decision, forward)
}

/// True when `path` needs no decoding and has no segment that could change: no `%`, `\`, `#`,
/// and no `/` followed by `/` or `.`.
#[inline]
fn is_plain(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in path {
        if matches!(b, b'%' | b'\\' | b'#') || (prev == b'/' && matches!(b, b'/' | b'.')) {
            return false;
        }
        prev = b;
    }
    true
}

use crate::http1::hex_digit as hex;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// One unit of the raw path: a byte, or a percent-escape and the byte it stands for.
#[derive(Clone, Copy)]
enum Unit {
    Byte(u8),
    Escape(u8),
    /// A separator: `/`, `\`, or (when `escaped`) `%2F` / `%5C`.
    Sep {
        escaped: bool,
        backslash: bool,
    },
}

/// Splits the raw path into units; `Err` on a broken escape, `%00` or `#`.
fn unit(path: &[u8], i: usize) -> Result<(Unit, usize), PathError> {
    match path[i] {
        b'/' => Ok((
            Unit::Sep {
                escaped: false,
                backslash: false,
            },
            1,
        )),
        b'\\' => Ok((
            Unit::Sep {
                escaped: false,
                backslash: true,
            },
            1,
        )),
        b'#' => Err(PathError::Fragment),
        b'%' => {
            let (Some(h), Some(l)) = (
                path.get(i + 1).copied().and_then(hex),
                path.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            match h << 4 | l {
                0 => Err(PathError::Nul),
                b'/' => Ok((
                    Unit::Sep {
                        escaped: true,
                        backslash: false,
                    },
                    3,
                )),
                b'\\' => Ok((
                    Unit::Sep {
                        escaped: true,
                        backslash: true,
                    },
                    3,
                )),
                c => Ok((Unit::Escape(c), 3)),
            }
        }
        b => Ok((Unit::Byte(b), 1)),
    }
}

fn slow(
    path: &[u8],
    opts: PathOptions,
    dec: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Normalized, PathError> {
    dec.clear();
    out.clear();
    // The decision differs from the raw bytes (an escape or a backslash was decoded).
    let mut decoded = false;
    // The forwarded path must differ from the raw bytes.
    let mut rewrite = false;
    let mut i = 0;
    // Skip the leading separator (an origin-form path starts with '/').
    if let Some(&b'/') = path.first() {
        i = 1;
    }
    loop {
        // One segment: units up to the next separator or the end.
        let seg_dec = dec.len();
        let seg_out = out.len();
        dec.push(b'/');
        out.push(b'/');
        let mut ended_by_sep = false;
        while i < path.len() {
            let (u, n) = unit(path, i)?;
            i += n;
            match u {
                Unit::Sep { escaped, backslash } => {
                    if escaped {
                        match opts.escaped_slashes {
                            EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                            EscapedSlashes::Decode => rewrite = true,
                            EscapedSlashes::Keep => {}
                        }
                    }
                    decoded |= escaped || backslash;
                    ended_by_sep = true;
                    break;
                }
                Unit::Byte(b) => {
                    dec.push(b);
                    out.push(b);
                }
                Unit::Escape(c) => {
                    decoded = true;
                    dec.push(c);
                    if is_unreserved(c) {
                        out.push(c);
                    } else {
                        out.extend_from_slice(&[
                            b'%',
                            HEX[(c >> 4) as usize],
                            HEX[(c & 15) as usize],
                        ]);
                    }
                }
            }
        }
        let seg = &dec[seg_dec + 1..];
        let last = !ended_by_sep;
        match seg {
            b"." | b".." => {
                rewrite = true;
                let up = seg.len() == 2;
                dec.truncate(seg_dec);
                out.truncate(seg_out);
                if up {
                    // Drop the previous segment.
                    if dec.is_empty() {
                        return Err(PathError::AboveRoot);
                    }
                    let d = dec.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    let o = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    dec.truncate(d);
                    out.truncate(o);
                }
                if last {
                    // `/a/b/..` is `/a/`: the result names a directory.
                    dec.push(b'/');
                    out.push(b'/');
                }
            }
            b"" if !last && opts.merge_slashes => {
                // An empty segment inside the path (`//`): merged away.
                rewrite = true;
                dec.truncate(seg_dec);
                out.truncate(seg_out);
            }
            _ => {}
        }
        if last {
            break;
        }
    }
    if dec.is_empty() {
        dec.push(b'/');
        out.push(b'/');
    }
    Ok(if rewrite {
        Normalized::Rewritten
    } else if decoded {
        Normalized::Decoded
    } else {
        Normalized::Unchanged
    })
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// How many bytes of `source` (a path as received or as normalised) encode the first
/// `decoded` bytes of its decision form: a percent-escape counts as one decoded byte.
pub fn encoded_len(source: &[u8], decoded: usize) -> usize {
    let mut i = 0;
    for _ in 0..decoded {
        if i >= source.len() {
            break;
        }
        i += if source[i] == b'%' { 3 } else { 1 };
    }
    i.min(source.len())
}

/// A path from the config (`path_prefix`, `path_exact`), decoded once so that it compares
/// with decision paths. `Err` names why no normalised request path could ever match it.
pub fn config_path(p: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let (u, n) = unit(p, i).map_err(|e| match e {
            PathError::BadEscape => "invalid percent-escape",
            PathError::Nul => "%00 is not allowed",
            _ => "invalid character",
        })?;
        i += n;
        match u {
            Unit::Sep { escaped: true, .. } => {
                return Err(
                    "an escaped '/' or '\\' never matches (requests are routed on decoded paths)",
                )
            }
            Unit::Sep { .. } => out.push(b'/'),
            Unit::Byte(b) | Unit::Escape(b) => out.push(b),
        }
    }
    if out.windows(2).any(|w| w == b"//") {
        return Err("'//' never matches (requests are routed with duplicate slashes merged)");
    }
    if out.split(|&b| b == b'/').any(|s| s == b"." || s == b"..") {
        return Err("'.' and '..' segments never match (requests are routed on normalised paths)");
    }
    Ok(out)
}

/// Characters a configured replacement path may hold: RFC 3986 `pchar`s, `/` and `%`.
pub fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str, opts: PathOptions) -> Result<(String, String, Normalized), PathError> {
        let (mut d, mut f) = (Vec::new(), Vec::new());
        let n = normalize(path.as_bytes(), opts, &mut d, &mut f)?;
        let s = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        Ok(match n {
            Normalized::Unchanged => (path.to_string(), path.to_string(), n),
            Normalized::Decoded => (s(&d), path.to_string(), n),
            Normalized::Rewritten => (s(&d), s(&f), n),
        })
    }

    fn keep() -> PathOptions {
        PathOptions::default()
    }

    #[test]
    fn plain_paths_are_untouched() {
        for p in [
            "/",
            "/api/users/42",
            "/a.b/c.d",
            "/x-y_z~",
            "/a/b/",
            "/.well-known/x",
        ] {
            let (d, f, _) = norm(p, keep()).unwrap();
            assert_eq!((d.as_str(), f.as_str()), (p, p), "{p}");
        }
        assert!(is_plain(b"/api/users/42"));
        assert!(!is_plain(b"/a/./b"));
    }

    #[test]
    fn dot_segments_and_slashes() {
        let cases = [
            ("/sub/../big.bin", "/big.bin", "/big.bin"),
            ("/sub/%2e%2e/big.bin", "/big.bin", "/big.bin"),
            ("/sub/%2E%2E/big.bin", "/big.bin", "/big.bin"),
            ("/sub/.%2E/big.bin", "/big.bin", "/big.bin"),
            ("/sub/..%2fbig.bin", "/big.bin", "/big.bin"),
            ("/sub/..%2Fbig.bin", "/big.bin", "/big.bin"),
            ("/sub/..%5cbig.bin", "/big.bin", "/big.bin"),
            ("/sub/..\\big.bin", "/big.bin", "/big.bin"),
            ("/a/./b", "/a/b", "/a/b"),
            ("/a/%2e/b", "/a/b", "/a/b"),
            ("/a//b", "/a/b", "/a/b"),
            ("//a///b//", "/a/b/", "/a/b/"),
            ("/a/b/..", "/a/", "/a/"),
            ("/a/b/.", "/a/b/", "/a/b/"),
            ("/a/..", "/", "/"),
            ("/.", "/", "/"),
            ("/a/b/../../c", "/c", "/c"),
            ("/a/%7euser/../x", "/a/x", "/a/x"),
            ("/a/%7Euser/./x%20y", "/a/~user/x y", "/a/~user/x%20y"),
            ("/a/%3b/./b", "/a/;/b", "/a/%3B/b"),
            ("/a/x%2Fy/../z", "/a/x/z", "/a/x/z"),
        ];
        for (p, d, f) in cases {
            let (gd, gf, n) = norm(p, keep()).unwrap_or_else(|e| panic!("{p}: {e:?}"));
            assert_eq!((gd.as_str(), gf.as_str()), (d, f), "{p}");
            assert_eq!(n, Normalized::Rewritten, "{p}");
        }
    }

    #[test]
    fn escapes_without_structure_forward_the_raw_bytes() {
        for (p, d) in [
            ("/api/projects/group%2Fname", "/api/projects/group/name"),
            ("/api/%7Euser", "/api/~user"),
            ("/a%20b", "/a b"),
            ("/a\\b", "/a/b"),
            ("/caf%C3%A9", "/café"),
        ] {
            let (gd, gf, n) = norm(p, keep()).unwrap();
            assert_eq!(
                (gd.as_str(), gf.as_str(), n),
                (d, p, Normalized::Decoded),
                "{p}"
            );
        }
    }

    #[test]
    fn refusals() {
        for (p, e) in [
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/..%2f..%2fetc/passwd", PathError::AboveRoot),
            ("/a/%zz", PathError::BadEscape),
            ("/a/%", PathError::BadEscape),
            ("/a/%4", PathError::BadEscape),
            ("/a/%00b", PathError::Nul),
            ("/a#frag", PathError::Fragment),
        ] {
            assert_eq!(norm(p, keep()).unwrap_err(), e, "{p}");
        }
    }

    #[test]
    fn escaped_slash_modes() {
        let reject = PathOptions {
            escaped_slashes: EscapedSlashes::Reject,
            ..keep()
        };
        assert_eq!(norm("/a%2Fb", reject).unwrap_err(), PathError::EscapedSlash);
        assert_eq!(norm("/a%5cb", reject).unwrap_err(), PathError::EscapedSlash);
        assert_eq!(norm("/a\\b", reject).unwrap().0, "/a/b");
        let decode = PathOptions {
            escaped_slashes: EscapedSlashes::Decode,
            ..keep()
        };
        assert_eq!(
            norm("/a%2Fb", decode).unwrap(),
            ("/a/b".into(), "/a/b".into(), Normalized::Rewritten)
        );
    }

    #[test]
    fn merge_slashes_off_keeps_empty_segments() {
        let off = PathOptions {
            merge_slashes: false,
            ..keep()
        };
        assert_eq!(norm("/a//b", off).unwrap().0, "/a//b");
        assert_eq!(norm("/a//../b", off).unwrap().0, "/a/b");
        assert_eq!(norm("/a//b", keep()).unwrap().0, "/a/b");
    }

    #[test]
    fn encoded_len_counts_escapes_as_one() {
        assert_eq!(encoded_len(b"/api%2Fusers", 5), 7);
        assert_eq!(encoded_len(b"/api/users", 5), 5);
        assert_eq!(encoded_len(b"/a", 5), 2);
    }

    #[test]
    fn config_paths() {
        assert_eq!(config_path(b"/caf%C3%A9/").unwrap(), "/café/".as_bytes());
        assert_eq!(config_path(b"/api/").unwrap(), b"/api/");
        for bad in [
            &b"/a//b"[..],
            b"/a/./b",
            b"/a/..",
            b"/a%2Fb",
            b"/a%zz",
            b"/%00",
        ] {
            assert!(
                config_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
