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
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        Some(c) if !v.starts_with(b"[") => (&v[..c], Some(&v[c + 1..])),
        _ => (v, None),
    };
    let host_ok = if host.starts_with(b"[") {
        host.ends_with(b"]")
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

/// coregate rejected while httparse still waits for bytes: only rules visible in the bytes
/// themselves can explain that (the line ending rules, which httparse applies only later).
fn explain_early(input: &[u8], err: Error) -> Option<&'static str> {
    match err {
        Error::NewLine if has_bare_lf(input) => Some("early: bare LF"),
        Error::BareCr if has_bare_cr(input) => Some("early: bare CR"),
        Error::Status if status_out_of_range(input) => Some("early: status outside 100..=599"),
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

#[test]
fn requests_agree_with_httparse() {
    let stats = std::cell::RefCell::new(std::collections::BTreeMap::<&str, usize>::new());
    runner()
        .run(&request(), |input| {
            let mut ours = [Header::default(); MAX_HEADERS];
            let mut their_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut theirs = httparse::Request::new(&mut their_headers);
            let their_result = theirs.parse(&input);
            let our_result = http1::parse_request(&input, &mut ours);
            match (our_result, their_result) {
                (Ok(Status::Complete(r)), Ok(httparse::Status::Complete(len))) => {
                    prop_assert_eq!(r.head_len, len);
                    prop_assert_eq!(r.method_span.of(&input), theirs.method.unwrap().as_bytes());
                    prop_assert_eq!(r.target.of(&input), theirs.path.unwrap().as_bytes());
                    let v = if r.version == http1::Version::Http11 {
                        1
                    } else {
                        0
                    };
                    prop_assert_eq!(Some(v), theirs.version);
                    prop_assert_eq!(r.header_count, theirs.headers.len());
                    for (a, b) in ours.iter().zip(theirs.headers.iter()) {
                        prop_assert_eq!(a.name.of(&input), b.name.as_bytes());
                        prop_assert_eq!(a.value.of(&input), b.value);
                    }
                    *stats.borrow_mut().entry("both accept, agree").or_default() += 1;
                }
                (Err(e), Ok(httparse::Status::Complete(_))) => {
                    match explain_request(&input, e, &theirs) {
                        Some(rule) => *stats.borrow_mut().entry(rule).or_default() += 1,
                        None => prop_assert!(
                            false,
                            "unexplained: we said {:?}, httparse accepted {:?}",
                            e,
                            String::from_utf8_lossy(&input)
                        ),
                    }
                }
                (Err(_), Err(_)) => *stats.borrow_mut().entry("both reject").or_default() += 1,
                (Ok(Status::Partial), Ok(httparse::Status::Partial)) => {
                    *stats.borrow_mut().entry("both partial").or_default() += 1
                }
                // A trailing bare CR leaves both waiting or httparse erring; we must not accept.
                (Ok(Status::Partial), Err(_)) => {
                    *stats.borrow_mut().entry("partial vs reject").or_default() += 1
                }
                (Err(e), Ok(httparse::Status::Partial)) => match explain_early(&input, e) {
                    Some(rule) => *stats.borrow_mut().entry(rule).or_default() += 1,
                    None => prop_assert!(
                        false,
                        "unexplained early rejection {:?} of {:?}",
                        e,
                        String::from_utf8_lossy(&input)
                    ),
                },
                (ours, theirs) => prop_assert!(
                    false,
                    "disagreement on {:?}: ours {:?}, httparse {:?}",
                    String::from_utf8_lossy(&input),
                    ours,
                    theirs
                ),
            }
            Ok(())
        })
        .unwrap();
    let stats = stats.into_inner();
    eprintln!("request classification: {stats:#?}");
    assert!(
        stats.get("both accept, agree").copied().unwrap_or(0) > 400,
        "too few valid heads generated: {stats:?}"
    );
}

#[test]
fn responses_agree_with_httparse() {
    let stats = std::cell::RefCell::new(std::collections::BTreeMap::<&str, usize>::new());
    runner()
        .run(&response(), |input| {
            let mut ours = [Header::default(); MAX_HEADERS];
            let mut their_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut theirs = httparse::Response::new(&mut their_headers);
            let their_result = theirs.parse(&input);
            match (http1::parse_response(&input, &mut ours), their_result) {
                (Ok(Status::Complete(r)), Ok(httparse::Status::Complete(len))) => {
                    prop_assert_eq!(r.head_len, len);
                    prop_assert_eq!(Some(r.code), theirs.code);
                    // httparse reports a reason phrase with obs-text (bytes >= 0x80) as "".
                    let reason = r.reason.of(&input);
                    if reason.is_ascii() {
                        prop_assert_eq!(reason, theirs.reason.unwrap_or("").as_bytes());
                    }
                    prop_assert_eq!(r.header_count, theirs.headers.len());
                    for (a, b) in ours.iter().zip(theirs.headers.iter()) {
                        prop_assert_eq!(a.name.of(&input), b.name.as_bytes());
                        prop_assert_eq!(a.value.of(&input), b.value);
                    }
                    *stats.borrow_mut().entry("both accept, agree").or_default() += 1;
                }
                (Err(e), Ok(httparse::Status::Complete(_))) => {
                    match explain_response(&input, e, &theirs) {
                        Some(rule) => *stats.borrow_mut().entry(rule).or_default() += 1,
                        None => prop_assert!(
                            false,
                            "unexplained: we said {:?}, httparse accepted {:?}",
                            e,
                            String::from_utf8_lossy(&input)
                        ),
                    }
                }
                (Err(_), Err(_)) => *stats.borrow_mut().entry("both reject").or_default() += 1,
                (Ok(Status::Partial), Ok(httparse::Status::Partial)) => {
                    *stats.borrow_mut().entry("both partial").or_default() += 1
                }
                (Ok(Status::Partial), Err(_)) => {
                    *stats.borrow_mut().entry("partial vs reject").or_default() += 1
                }
                (Err(e), Ok(httparse::Status::Partial)) => match explain_early(&input, e) {
                    Some(rule) => *stats.borrow_mut().entry(rule).or_default() += 1,
                    None => prop_assert!(
                        false,
                        "unexplained early rejection {:?} of {:?}",
                        e,
                        String::from_utf8_lossy(&input)
                    ),
                },
                (ours, theirs) => prop_assert!(
                    false,
                    "disagreement on {:?}: ours {:?}, httparse {:?}",
                    String::from_utf8_lossy(&input),
                    ours,
                    theirs
                ),
            }
            Ok(())
        })
        .unwrap();
    let stats = stats.into_inner();
    eprintln!("response classification: {stats:#?}");
    assert!(
        stats.get("both accept, agree").copied().unwrap_or(0) > 400,
        "too few valid heads generated: {stats:?}"
    );
}
