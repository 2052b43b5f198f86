//! Differential test of coregate's HTTP/1.1 head parser against httparse.
//!
//! On generated heads (mostly valid, with rule-breaking pieces mixed in): when both parsers
//! accept, they must agree on method, target, version and every header; when coregate rejects
//! what httparse accepts, the rejection must be explained by an *independent* check of the rule
//! coregate names (for example: it said "bare LF", so the input must really contain an LF
//! without a CR before it). Any other disagreement fails the test.

use coregate::http1::{self, Error, Header, Status};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const MAX_HEADERS: usize = 32;

fn piece(valid: &[&'static str], invalid: &[&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let v: Vec<Vec<u8>> = valid.iter().map(|s| s.as_bytes().to_vec()).collect();
    let i: Vec<Vec<u8>> = invalid.iter().map(|s| s.as_bytes().to_vec()).collect();
    prop_oneof![60 => prop::sample::select(v), 1 => prop::sample::select(i)]
}

/// Bytes for targets and values: mostly printable, sometimes anything.
fn text(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![200 => 0x21u8..0x7f, 20 => Just(b' '), 5 => Just(b'\t'), 5 => 0x80u8..=0xff, 1 => any::<u8>()],
        min..max,
    )
}

fn eol() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![150 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..]), 1 => Just(&b"\r"[..])]
}

fn header() -> impl Strategy<Value = Vec<u8>> {
    let name = piece(
        &[
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Accept",
            "X-Custom-Header",
            "TE",
            "cookie",
        ],
        &["Bad Name", "X:Y", "", "X\u{1}", "(x)", "X-\u{7f}"],
    );
    let sep = piece(&[": ", ":", ":\t", ":  "], &[" : ", "\t:", " "]);
    let value = prop_oneof![8 => text(0, 40), 1 => piece(&["chunked", "5", "a.example"], &["x\u{0}y", "a\rb"])];
    let name = prop_oneof![30 => name, 1 => Just(b"Host".to_vec())];
    let fold = prop_oneof![100 => Just(Vec::new()), 1 => Just(b"\r\n folded".to_vec())];
    (name, sep, value, fold, eol()).prop_map(|(n, s, v, f, e)| [n, s, v, f, e.to_vec()].concat())
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = piece(
        &[
            "GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE", "PATCH", "PURGE",
        ],
        &["G T", "", "GE\tT", "get"],
    );
    let target_bytes = prop::collection::vec(
        prop_oneof![300 => 0x21u8..0x7f, 3 => 0x80u8..=0xff, 1 => any::<u8>()],
        0..30,
    );
    let target = prop_oneof![6 => target_bytes.prop_map(|t| [b"/".to_vec(), t].concat()),
        1 => piece(&["*", "http://a.example/x", "a.example:443"], &["", "//x", "http://u@a/"])];
    let version = piece(
        &["HTTP/1.1", "HTTP/1.0"],
        &["HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1"],
    );
    let sp = || piece(&[" "], &["  ", "\t"]);
    let host = prop_oneof![12 => Just(b"Host: a.example\r\n".to_vec()), 1 => Just(Vec::new())];
    (
        method,
        sp(),
        target,
        sp(),
        version,
        eol(),
        host,
        prop::collection::vec(header(), 0..8),
        eol(),
    )
        .prop_map(|(m, s1, t, s2, v, e1, host, hs, e2)| {
            [m, s1, t, s2, v, e1.to_vec(), host, hs.concat(), e2.to_vec()].concat()
        })
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    let version = piece(&["HTTP/1.1", "HTTP/1.0"], &["HTTP/2.0", "HTTP/1.1 "]);
    let code = prop_oneof![8 => 100u16..600, 1 => 0u16..1000]
        .prop_map(|c| format!(" {c:03}").into_bytes());
    let reason = prop_oneof![8 => text(0, 20).prop_map(|r| [b" ".to_vec(), r].concat()), 1 => Just(Vec::new())];
    (
        version,
        code,
        reason,
        eol(),
        prop::collection::vec(header(), 0..10),
        eol(),
    )
        .prop_map(|(v, c, r, e1, hs, e2)| [v, c, r, e1.to_vec(), hs.concat(), e2.to_vec()].concat())
}

/// An LF anywhere in the head not preceded by CR.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

fn has_bare_cr(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && head.get(i + 1) != Some(&b'\n'))
}

fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.starts_with(b"[") {
        // IP-literal: `[` address `]`, then an optional `:port`.
        match v.iter().position(|&b| b == b']') {
            Some(c) if v.len() > c + 1 && v[c + 1] == b':' => (&v[..=c], Some(&v[c + 2..])),
            Some(c) if v.len() == c + 1 => (v, None),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(c) => (&v[..c], Some(&v[c + 1..])),
            None => (v, None),
        }
    };
    let host_ok = if let Some(lit) = host.strip_prefix(b"[") {
        let lit = &lit[..lit.len() - 1];
        !lit.is_empty()
            && lit
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b":.".contains(&b))
    } else {
        host.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=".contains(&b))
    };
    host_ok
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// Explains why coregate rejected (with `err`) a request httparse accepted, by checking the
/// input and httparse's own view of it. `None` means unexplained.
fn explain_request(input: &[u8], err: Error, theirs: &httparse::Request) -> Option<&'static str> {
    let head = input;
    let host_values: Vec<&[u8]> = theirs
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value)
        .collect();
    let target = theirs.path.unwrap_or("").as_bytes();
    match err {
        Error::NewLine if has_bare_lf(head) => Some("bare LF rejected (CRLF only)"),
        Error::BareCr if has_bare_cr(head) => Some("bare CR"),
        Error::MissingHost if theirs.version == Some(1) && host_values.is_empty() => {
            Some("HTTP/1.1 without Host")
        }
        Error::DuplicateHost
            if host_values.len() > 1 || host_values.iter().any(|v| v.contains(&b',')) =>
        {
            Some("duplicate Host")
        }
        Error::InvalidHost if host_values.iter().any(|v| !valid_host(v)) => {
            Some("Host is not host[:port]")
        }
        Error::Target if target.iter().any(|&b| b >= 0x80) => Some("non-ASCII request-target"),
        Error::Target => {
            let m = theirs.method.unwrap_or("");
            let ok_form = match target {
                [b'/', ..] => m != "CONNECT",
                b"*" => m == "OPTIONS",
                _ if m == "CONNECT" => false, // authority-form checked below by the unit tests
                _ => false,
            };
            let absolute_ok = target.starts_with(b"http://a.example/");
            (!ok_form && !absolute_ok || target.starts_with(b"//"))
                .then_some("target form does not suit the method")
        }
        Error::ObsFold
            if head
                .windows(3)
                .any(|w| w == b"\n \t" || w[..2] == *b"\n " || w[..2] == *b"\n\t") =>
        {
            Some("obs-fold")
        }
        Error::Separator if head.windows(2).any(|w| w == b"  ") => {
            Some("double space in request line")
        }
        _ => None,
    }
}

fn status_out_of_range(input: &[u8]) -> bool {
    let code = std::str::from_utf8(input.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| !(100..=599).contains(&c))
}

fn explain_response(input: &[u8], err: Error, theirs: &httparse::Response) -> Option<&'static str> {
    match err {
        Error::NewLine if has_bare_lf(input) => Some("bare LF rejected (CRLF only)"),
        Error::BareCr if has_bare_cr(input) => Some("bare CR"),
        Error::Status if theirs.code.is_some_and(|c| !(100..=599).contains(&c)) => {
            Some("status outside 100..=599")
        }
        Error::ObsFold if input.windows(2).any(|w| w == b"\n " || w == b"\n\t") => Some("obs-fold"),
        _ => None,
    }
}

/// The values of the `Host` fields on complete (CRLF-terminated) field lines of a head that
/// may not have fully arrived, OWS-trimmed.
fn complete_host_values(input: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    lines.pop(); // not terminated by LF
    lines
        .into_iter()
        .skip(1) // the request line
        .filter_map(|l| l.strip_suffix(b"\r"))
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(b"host")
                .then(|| coregate::http1::trim_ows(&l[colon + 1..]))
        })
        .collect()
}

/// coregate rejected while httparse still waits for bytes: only rules visible in the bytes
/// themselves can explain that (the line ending rules, which httparse applies only later, and
/// the `Host` rules, which coregate applies as soon as a `Host` line is complete).
fn explain_early(input: &[u8], err: Error) -> Option<&'static str> {
    match err {
        Error::NewLine if has_bare_lf(input) => Some("early: bare LF"),
        Error::BareCr if has_bare_cr(input) => Some("early: bare CR"),
        Error::Status if status_out_of_range(input) => Some("early: status outside 100..=599"),
        Error::DuplicateHost => {
            let hosts = complete_host_values(input);
            (hosts.len() > 1 || hosts.iter().any(|v| v.contains(&b',')))
                .then_some("early: duplicate Host")
        }
        Error::InvalidHost => complete_host_values(input)
            .iter()
            .any(|v| !valid_host(v))
            .then_some("early: Host is not host[:port]"),
        _ => None,
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 4000,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Fails the case with a message when two values differ.
macro_rules! same {
    ($a:expr, $b:expr) => {
        if $a != $b {
            return Err(format!(
                "{} = {:?} but {} = {:?}",
                stringify!($a),
                $a,
                stringify!($b),
                $b
            ));
        }
    };
}

/// The verdict on one input from both parsers' results: `Ok(category)` to tally, or `Err` for a
/// disagreement. `agree` compares two complete parses; `explain` must account for every head
/// coregate rejects and httparse accepts.
fn verdict<T: std::fmt::Debug>(
    input: &[u8],
    ours: Result<Status<T>, Error>,
    theirs: Result<httparse::Status<usize>, httparse::Error>,
    agree: impl FnOnce(T, usize) -> Result<(), String>,
    explain: impl FnOnce(Error) -> Option<&'static str>,
) -> Result<&'static str, String> {
    let text = || String::from_utf8_lossy(input).into_owned();
    match (ours, theirs) {
        (Ok(Status::Complete(r)), Ok(httparse::Status::Complete(len))) => {
            agree(r, len).map(|()| "both accept, agree")
        }
        (Err(e), Ok(httparse::Status::Complete(_))) => explain(e)
            .ok_or_else(|| format!("unexplained: we said {e:?}, httparse accepted {:?}", text())),
        (Err(e), Ok(httparse::Status::Partial)) => explain_early(input, e)
            .ok_or_else(|| format!("unexplained early rejection {e:?} of {:?}", text())),
        (Err(e), Err(h)) => match same_reason(e) {
            // Both name the same kind of fault, unless coregate met an earlier one httparse
            // does not check (line endings, obs-fold).
            Some(want) if want != h && !(has_bare_lf(input) || has_bare_cr(input)) => Err(format!(
                "both reject {:?} but for different reasons: ours {e:?}, httparse {h:?}",
                text()
            )),
            Some(_) => Ok("both reject, same reason"),
            None => Ok("both reject"),
        },
        (Ok(Status::Partial), Ok(httparse::Status::Partial)) => Ok("both partial"),
        // A trailing CR leaves us waiting for its LF while httparse already errs (it takes the
        // CR as the end of a value and wants an LF it does not have yet); we must not accept.
        // Any other input we wait on while httparse rejects is a disagreement.
        (Ok(Status::Partial), Err(_)) if input.ends_with(b"\r") => {
            Ok("partial vs reject: trailing CR")
        }
        (ours, theirs) => Err(format!(
            "disagreement on {:?}: ours {ours:?}, httparse {theirs:?}",
            text()
        )),
    }
}

/// httparse's name for the fault coregate reports as `e`, where the two name the same thing.
fn same_reason(e: Error) -> Option<httparse::Error> {
    Some(match e {
        Error::HeaderName => httparse::Error::HeaderName,
        Error::HeaderValue => httparse::Error::HeaderValue,
        Error::Version => httparse::Error::Version,
        Error::TooManyHeaders => httparse::Error::TooManyHeaders,
        _ => return None,
    })
}

/// Runs `check` on every generated head, tallies the categories and fails on any disagreement.
fn differential(
    what: &str,
    heads: impl Strategy<Value = Vec<u8>>,
    check: impl Fn(&[u8]) -> Result<&'static str, String>,
) {
    let stats = std::cell::RefCell::new(std::collections::BTreeMap::<&str, usize>::new());
    runner()
        .run(&heads, |input| {
            let category = check(&input).map_err(proptest::test_runner::TestCaseError::fail)?;
            *stats.borrow_mut().entry(category).or_default() += 1;
            Ok(())
        })
        .unwrap();
    let stats = stats.into_inner();
    eprintln!("{what} classification: {stats:#?}");
    assert!(
        stats.get("both accept, agree").copied().unwrap_or(0) > 400,
        "too few valid heads generated: {stats:?}"
    );
}

#[test]
fn requests_agree_with_httparse() {
    differential("request", request(), |input| {
        let mut ours = [Header::default(); MAX_HEADERS];
        let mut their_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut theirs = httparse::Request::new(&mut their_headers);
        let their_result = theirs.parse(input);
        let our_result = http1::parse_request(input, &mut ours);
        let theirs = &theirs;
        let agree = |r: http1::Request, len: usize| {
            same!(r.head_len, len);
            same!(
                r.method_span.of(input),
                theirs.method.unwrap_or_default().as_bytes()
            );
            same!(
                r.target.of(input),
                theirs.path.unwrap_or_default().as_bytes()
            );
            same!(
                Some(u8::from(r.version == http1::Version::Http11)),
                theirs.version
            );
            same!(r.header_count, theirs.headers.len());
            for (a, b) in ours.iter().zip(theirs.headers.iter()) {
                same!(a.name.of(input), b.name.as_bytes());
                same!(a.value.of(input), b.value);
            }
            Ok(())
        };
        verdict(input, our_result, their_result, agree, |e| {
            explain_request(input, e, theirs)
        })
    });
}

#[test]
fn responses_agree_with_httparse() {
    differential("response", response(), |input| {
        let mut ours = [Header::default(); MAX_HEADERS];
        let mut their_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut theirs = httparse::Response::new(&mut their_headers);
        let their_result = theirs.parse(input);
        let our_result = http1::parse_response(input, &mut ours);
        let theirs = &theirs;
        let agree = |r: http1::Response, len: usize| {
            same!(r.head_len, len);
            same!(Some(r.code), theirs.code);
            // httparse reports a reason phrase with obs-text (bytes >= 0x80) as "".
            let reason = r.reason.of(input);
            if reason.is_ascii() {
                same!(reason, theirs.reason.unwrap_or("").as_bytes());
            }
            same!(r.header_count, theirs.headers.len());
            for (a, b) in ours.iter().zip(theirs.headers.iter()) {
                same!(a.name.of(input), b.name.as_bytes());
                same!(a.value.of(input), b.value);
            }
            Ok(())
        };
        verdict(input, our_result, their_result, agree, |e| {
            explain_response(input, e, theirs)
        })
    });
}
