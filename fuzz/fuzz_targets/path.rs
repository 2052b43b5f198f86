//! Path normalisation on arbitrary paths, under every option: it never panics, and what it
//! accepts holds the invariants routing relies on. The decision path starts with `/`, has no
//! `.` or `..` segment and (with `merge_slashes`) no empty inner segment; the forwarded path,
//! decoded the way a backend would decode it, is the decision path; `encoded_len` of the whole
//! decision stays within the forwarded bytes.
#![no_main]
use coregate::config::EscapedSlashes;
use coregate::route::{encoded_len, normalize, Normalized, PathOptions};
use libfuzzer_sys::fuzz_target;

/// Percent-decodes `s` (valid escapes only, as the normaliser guarantees), with `\` and `%5C`
/// read as `/` (the decision treats them as separators).
fn decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).unwrap() as u8;
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let b = if s[i] == b'%' {
            i += 3;
            hex(s[i - 2]) << 4 | hex(s[i - 1])
        } else {
            i += 1;
            s[i - 1]
        };
        out.push(if b == b'\\' { b'/' } else { b });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let opts = PathOptions {
        merge_slashes: flags & 1 == 0,
        escaped_slashes: match (flags >> 1) % 3 {
            0 => EscapedSlashes::Keep,
            1 => EscapedSlashes::Reject,
            _ => EscapedSlashes::Decode,
        },
    };
    let mut path = b"/".to_vec();
    path.extend_from_slice(rest);
    let (mut dec, mut fwd) = (Vec::new(), Vec::new());
    let Ok(n) = normalize(&path, opts, &mut dec, &mut fwd) else { return };
    let (decision, forward): (&[u8], &[u8]) = match n {
        Normalized::Unchanged => (&path, &path),
        Normalized::Decoded => (&dec, &path),
        Normalized::Rewritten => (&dec, &fwd),
    };
    assert_eq!(decision.first(), Some(&b'/'));
    for (i, seg) in decision.split(|&b| b == b'/').enumerate().skip(1) {
        assert!(seg != b"." && seg != b"..", "dot segment in {decision:?}");
        let last = i == decision.split(|&b| b == b'/').count() - 1;
        if opts.merge_slashes && !last && n != Normalized::Unchanged {
            assert!(!seg.is_empty(), "empty segment in {decision:?}");
        }
    }
    if n != Normalized::Unchanged {
        assert_eq!(decode(forward), decision);
    }
    assert!(encoded_len(forward, decision.len()) <= forward.len());
});
